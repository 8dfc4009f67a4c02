"""Small versions of the classic torchvision-style architectures, written as their authors
write them (in-place ReLUs, ``out += identity``, BatchNorm, ``ceil_mode`` pooling, depthwise
convolutions, squeeze-excitation, dense concatenation, channels-last LayerNorm with a layer
scale), and max pooling with ``ceil_mode``: the traced graph reproduces each model, and
``output_bounds`` / ``local_lipschitz`` / ``jacobian_bounds`` contain sampled outputs and
gradients (session 15: the in-place residual sum and ``ceil_mode`` were refused before).
"""

# ruff: noqa: E501, E701, E702
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.api.sampled import assert_graph_reproduces, model_tests


class BasicBlock(nn.Module):
    def __init__(s, cin, cout, stride=1):
        super().__init__()
        s.conv1=nn.Conv2d(cin,cout,3,stride,1,bias=False); s.bn1=nn.BatchNorm2d(cout); s.relu=nn.ReLU(inplace=True)
        s.conv2=nn.Conv2d(cout,cout,3,1,1,bias=False); s.bn2=nn.BatchNorm2d(cout)
        s.down=None if stride==1 and cin==cout else nn.Sequential(nn.Conv2d(cin,cout,1,stride,bias=False), nn.BatchNorm2d(cout))
    def forward(s,x):
        identity=x
        out=s.relu(s.bn1(s.conv1(x))); out=s.bn2(s.conv2(out))
        if s.down is not None: identity=s.down(x)
        out+=identity
        return s.relu(out)
class ResNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.conv1=nn.Conv2d(3,8,3,1,1,bias=False); s.bn1=nn.BatchNorm2d(8); s.relu=nn.ReLU(inplace=True); s.maxpool=nn.MaxPool2d(3,2,1)
        s.layer1=BasicBlock(8,8); s.layer2=BasicBlock(8,16,2); s.avgpool=nn.AdaptiveAvgPool2d((1,1)); s.fc=nn.Linear(16,10)
    def forward(s,x):
        x=s.maxpool(s.relu(s.bn1(s.conv1(x)))); x=s.layer2(s.layer1(x)); x=s.avgpool(x); x=torch.flatten(x,1); return s.fc(x)
class VGG(nn.Module):
    def __init__(s):
        super().__init__()
        s.features=nn.Sequential(nn.Conv2d(3,8,3,padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Conv2d(8,16,3,padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        s.avgpool=nn.AdaptiveAvgPool2d((2,2)); s.classifier=nn.Sequential(nn.Linear(64,32), nn.ReLU(True), nn.Dropout(), nn.Linear(32,10))
    def forward(s,x): return s.classifier(torch.flatten(s.avgpool(s.features(x)),1))
class InvRes(nn.Module):
    def __init__(s, c, t=4):
        super().__init__(); h=c*t
        s.conv=nn.Sequential(nn.Conv2d(c,h,1,bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True), nn.Conv2d(h,h,3,1,1,groups=h,bias=False), nn.BatchNorm2d(h), nn.ReLU6(inplace=True), nn.Conv2d(h,c,1,bias=False), nn.BatchNorm2d(c))
    def forward(s,x): return x + s.conv(x)
class MobileNet(nn.Module):
    def __init__(s):
        super().__init__(); s.stem=nn.Sequential(nn.Conv2d(3,8,3,2,1,bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True)); s.b=InvRes(8); s.head=nn.Linear(8,10)
    def forward(s,x): x=s.b(s.stem(x)); x=F.adaptive_avg_pool2d(x,1).reshape(x.shape[0],-1); return s.head(x)
class SE(nn.Module):
    def __init__(s,c):
        super().__init__(); s.fc1=nn.Conv2d(c,c//2,1); s.fc2=nn.Conv2d(c//2,c,1)
    def forward(s,x): w=F.adaptive_avg_pool2d(x,1); w=torch.sigmoid(s.fc2(F.silu(s.fc1(w)))); return x*w
class EffNet(nn.Module):
    def __init__(s):
        super().__init__(); s.stem=nn.Sequential(nn.Conv2d(3,8,3,2,1), nn.BatchNorm2d(8), nn.SiLU(inplace=True)); s.se=SE(8); s.head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8,10))
    def forward(s,x): return s.head(s.se(s.stem(x)))
class Fire(nn.Module):
    def __init__(s,cin,sq,e):
        super().__init__(); s.squeeze=nn.Conv2d(cin,sq,1); s.act=nn.ReLU(inplace=True); s.e1=nn.Conv2d(sq,e,1); s.e3=nn.Conv2d(sq,e,3,padding=1)
    def forward(s,x): x=s.act(s.squeeze(x)); return torch.cat([s.act(s.e1(x)), s.act(s.e3(x))],1)
class Squeeze(nn.Module):
    def __init__(s):
        super().__init__(); s.features=nn.Sequential(nn.Conv2d(3,8,3,2), nn.ReLU(inplace=True), nn.MaxPool2d(3,2,ceil_mode=True), Fire(8,4,8)); s.classifier=nn.Sequential(nn.Dropout(0.5), nn.Conv2d(16,10,1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1,1)))
    def forward(s,x): return torch.flatten(s.classifier(s.features(x)),1)
class DenseLayer(nn.Module):
    def __init__(s,cin,g):
        super().__init__(); s.norm=nn.BatchNorm2d(cin); s.relu=nn.ReLU(inplace=True); s.conv=nn.Conv2d(cin,g,3,padding=1,bias=False)
    def forward(s,feats):
        x=torch.cat(feats,1); return s.conv(s.relu(s.norm(x)))
class DenseNet(nn.Module):
    def __init__(s):
        super().__init__(); s.conv0=nn.Conv2d(3,8,3,padding=1,bias=False); s.l1=DenseLayer(8,4); s.l2=DenseLayer(12,4); s.norm=nn.BatchNorm2d(16); s.fc=nn.Linear(16,10)
    def forward(s,x):
        f=[s.conv0(x)]; f.append(s.l1(f)); f.append(s.l2(f)); out=F.relu(s.norm(torch.cat(f,1)), inplace=True)
        return s.fc(torch.flatten(F.adaptive_avg_pool2d(out,(1,1)),1))
class ConvNeXtBlock(nn.Module):
    def __init__(s,c):
        super().__init__(); s.dw=nn.Conv2d(c,c,7,padding=3,groups=c); s.norm=nn.LayerNorm(c,eps=1e-6); s.pw1=nn.Linear(c,4*c); s.act=nn.GELU(); s.pw2=nn.Linear(4*c,c); s.gamma=nn.Parameter(1e-1*torch.ones(c))
    def forward(s,x):
        inp=x; x=s.dw(x); x=x.permute(0,2,3,1); x=s.pw2(s.act(s.pw1(s.norm(x)))); x=s.gamma*x; x=x.permute(0,3,1,2); return inp+x
class ConvNeXt(nn.Module):
    def __init__(s):
        super().__init__(); s.stem=nn.Conv2d(3,8,2,2); s.b=ConvNeXtBlock(8); s.norm=nn.LayerNorm(8); s.head=nn.Linear(8,10)
    def forward(s,x): x=s.b(s.stem(x)); return s.head(s.norm(x.mean([-2,-1])))
class ViT(nn.Module):
    def __init__(s):
        super().__init__(); s.patch=nn.Conv2d(3,16,4,4); s.cls=nn.Parameter(torch.zeros(1,1,16)); s.pos=nn.Parameter(torch.randn(1,5,16)*0.02)
        s.enc=nn.TransformerEncoder(nn.TransformerEncoderLayer(16,2,32,dropout=0.0,batch_first=True,norm_first=True),1); s.ln=nn.LayerNorm(16); s.head=nn.Linear(16,10)
    def forward(s,x):
        x=s.patch(x).flatten(2).transpose(1,2); x=torch.cat([s.cls.expand(x.shape[0],-1,-1),x],1)+s.pos; x=s.enc(x); return s.head(s.ln(x[:,0]))
class LeNet(nn.Module):
    def __init__(s):
        super().__init__(); s.c1=nn.Conv2d(3,6,3); s.c2=nn.Conv2d(6,8,3); s.f=nn.Linear(8,10)
    def forward(s,x): x=F.avg_pool2d(torch.tanh(s.c1(x)),2); x=F.avg_pool2d(torch.tanh(s.c2(x)),2); return s.f(x.view(x.size(0),-1))


class CeilPools(nn.Module):
    """MaxPool2d / MaxPool1d with ceil_mode (clipped last windows, with and without padding)."""

    def __init__(s):
        super().__init__(); s.c=nn.Conv2d(2,3,2); s.p1=nn.MaxPool2d(3,2,ceil_mode=True); s.p2=nn.MaxPool2d((2,3),(2,2),padding=(1,1),ceil_mode=True)
        s.q=nn.MaxPool1d(3,2,ceil_mode=True); s.f=nn.Linear(48+75+96,4)

    def forward(s,x):
        h=torch.relu(s.c(x)); a=s.p1(h); b=s.p2(h); c=s.q(h.flatten(2))
        return s.f(torch.cat([a.flatten(1), b.flatten(1), c.flatten(1)],1))


def _seeded(model: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2); mod.running_var.uniform_(0.5, 1.5)
    return model.eval()


MODELS = {name: (_seeded(cls()), shape) for name, cls, shape in [
    ("resnet", ResNet, (3, 8, 8)), ("vgg", VGG, (3, 8, 8)), ("mobilenet", MobileNet, (3, 8, 8)),
    ("effnet", EffNet, (3, 8, 8)), ("squeezenet", Squeeze, (3, 8, 8)),
    ("densenet", DenseNet, (3, 8, 8)), ("convnext", ConvNeXt, (3, 8, 8)),
    ("ceil_pools", CeilPools, (2, 9, 9))]}
SLOW = {"convnext", "mobilenet"}

test_output_bounds_contain_samples, test_lipschitz_and_jacobian_bounds_contain_sampled_gradients = (
    model_tests(MODELS, SLOW))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_traced_graph_reproduces_the_model(name):
    model, shape = MODELS[name]
    assert_graph_reproduces(model, shape, n=20, eps=0.3)
